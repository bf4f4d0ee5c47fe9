"""Networks on real and synthetic data as `dynopt.Problem`s (`equinox.nn` models, MSE and
cross-entropy, full batch or minibatches, the data axis shardable over devices)."""

from ._networks.data import (
    digits as digits,
    gaussian_classes as gaussian_classes,
    gaussian_regression as gaussian_regression,
)
from ._networks.models import mlp as mlp, SmallCNN as SmallCNN
from ._networks.problem import (
    data_mesh as data_mesh,
    network_problem as network_problem,
    shard_data as shard_data,
)
from ._networks.reference import central_flows_example as central_flows_example
