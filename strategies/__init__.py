"""Learn/unlearn strategies. Importing this package registers the built-in ones."""

from lifecycle.strategies.analytic import SPEC as ANALYTIC
from lifecycle.strategies.base import ForgetSet, RetrainPlan, Strategy, StrategyConfigError, Tags, TaskData
from lifecycle.strategies.hypernet import SPEC as HYPERNET
from lifecycle.strategies.olora import SPEC as OLORA
from lifecycle.strategies.registry import StrategySpec, UnknownStrategy, get, names, register
from lifecycle.strategies.s3t import SPEC as S3T

register(ANALYTIC)
register(HYPERNET)
register(OLORA)
register(S3T)

__all__ = [
    "ForgetSet",
    "RetrainPlan",
    "Strategy",
    "StrategyConfigError",
    "StrategySpec",
    "Tags",
    "TaskData",
    "UnknownStrategy",
    "get",
    "names",
    "register",
]
