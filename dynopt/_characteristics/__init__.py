"""First-order PDEs by the method of characteristics (public API in `dynopt.characteristics`)."""
