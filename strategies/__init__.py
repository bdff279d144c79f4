"""Learn/unlearn strategies. Importing this package registers the built-in ones.

Submodules for strategy authors: ``inputs`` (the shared input checks),
``training`` (the shared Adam loop) and ``conformance`` (the checks every
strategy must pass, picked by its tags).
"""

from lifecycle.strategies.analytic import SPEC as ANALYTIC
from lifecycle.strategies.base import (
    Exactness,
    ForgetNeeds,
    ForgetSet,
    ForgetUnit,
    MissingCapability,
    RetrainPlan,
    Strategy,
    StrategyConfigError,
    StrategyInputError,
    Tags,
    TaskData,
)
from lifecycle.strategies.hypernet import SPEC as HYPERNET
from lifecycle.strategies.olora import SPEC as OLORA
from lifecycle.strategies.registry import StrategySpec, UnknownStrategy, get, names, register
from lifecycle.strategies.s3t import SPEC as S3T

register(ANALYTIC)
register(HYPERNET)
register(OLORA)
register(S3T)

__all__ = [
    "Exactness",
    "ForgetNeeds",
    "ForgetSet",
    "ForgetUnit",
    "MissingCapability",
    "RetrainPlan",
    "Strategy",
    "StrategyConfigError",
    "StrategyInputError",
    "StrategySpec",
    "Tags",
    "TaskData",
    "UnknownStrategy",
    "get",
    "names",
    "register",
]
