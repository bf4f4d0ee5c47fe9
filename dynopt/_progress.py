"""Progress of long work: off in the library, on in the CLI (`dynopt.show_progress`).

`run`'s scan reports each finished block of steps from inside `jit` (a `jax.debug.callback`
that feeds a `tqdm` bar; one callback per block of `every` steps, so the cost is one host call
per saved point) and `solve` hands diffrax its own `TqdmProgressMeter`. Whether progress is
shown is read when a function is traced, so switching it on or off compiles the programs again
(once each): the compiled program without progress has no callback at all.
"""

import contextlib
import threading
from collections.abc import Iterator

import jax


_state = threading.local()
_open: list = []  # the open tqdm bars, innermost last
_lock = threading.Lock()


def enabled() -> bool:
    """Whether progress is shown (this thread): `False` unless `show_progress` switched it on."""
    return getattr(_state, "on", False)


@contextlib.contextmanager
def show_progress(on: bool = True) -> Iterator[None]:
    """Show progress bars for `run` and `solve` inside this block (a context manager):

    ```python
    with dynopt.show_progress():
        traj = dynopt.run(disc, problem, 1_000_000)
    ```

    The experiments' command line shows progress; the library does not by default.

    **Raises:** `ValueError` unless `on` is `True` or `False` (on entering the block).
    """
    from ._validation import flag

    on = flag("on", on)  # (`bool("no")` is True)
    previous = enabled()
    _state.on = on
    try:
        yield
    finally:
        _state.on = previous


def diffrax_meter():
    """diffrax's `TqdmProgressMeter` when progress is on, else its `NoProgressMeter`."""
    import diffrax

    return diffrax.TqdmProgressMeter() if enabled() else diffrax.NoProgressMeter()


@contextlib.contextmanager
def bar(total: int, desc: str) -> Iterator[None]:
    """A tqdm bar of `total` steps around one call of a jitted function, fed by the `tick`s that
    the call executes (the innermost open bar receives them; the compiled program is shared by
    calls, the bar is not). Nothing is opened when progress is off."""
    if not enabled():
        yield
        return
    from tqdm.auto import tqdm

    progress = tqdm(total=total, desc=desc, unit="step", leave=False, mininterval=0.5)
    with _lock:
        _open.append(progress)
    try:
        yield
    finally:
        with _lock:
            _open.remove(progress)
        progress.close()


def _advance(steps) -> None:
    with _lock:
        progress = _open[-1] if _open else None
    if progress is not None:
        progress.update(int(steps))


def tick(steps: int) -> None:
    """Inside a traced function (only when `enabled()` at trace time): advance the open bar by
    `steps` when this point of the program executes."""
    jax.debug.callback(_advance, steps)
