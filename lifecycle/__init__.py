"""lifecycle: a continual learn/unlearn lifecycle manager.

    lc = lifecycle.connect("sqlite:///ledger.db")
    lc.create_model("digits", strategy="analytic", n_features=64, n_classes=10)
    r = lc.learn("digits", task="0-1", X=X, y=y, probe=(Xt, yt))
    lc.drain(); lc.wait(r.id)
"""

from lifecycle.api import Lifecycle, Step, connect
from lifecycle.errors import *  # noqa: F403 (the typed errors are part of the API)
from lifecycle.errors import __all__ as _errors
from lifecycle.store.records import Evaluation, Model, ModelVersion, RelapseFinding, Request, Task

__all__ = ["Evaluation", "Lifecycle", "Model", "ModelVersion", "RelapseFinding", "Request", "Step", "Task",
           "connect", *_errors]
