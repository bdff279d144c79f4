"""The Avalanche baselines of the comparative bench: Naive, EWC, Replay and LwF.

They cannot unlearn: they train on the retained stream only, continuing with
each learn and starting over on the retained tasks, in learn order, at each
forget. They use the reference's MLP (``bench.reference``).
"""

from __future__ import annotations

import contextlib
import io
import time
import warnings
from collections.abc import Sequence

import torch

from bench.reference import MlpSettings, mlp
from bench.runners import Run, Step, TorchClassifier, classifier, classifier_run, frozen_copy, n_features
from bench.sequence import Op
from lifecycle.datasets import StreamTask

BASELINES = ("naive", "ewc", "replay", "lwf")


def avalanche_strategy(name: str, model: torch.nn.Module, settings: MlpSettings):
    from avalanche.training import EWC, LwF, Naive, Replay
    from avalanche.training.plugins import EvaluationPlugin

    common = dict(
        model=model, optimizer=torch.optim.Adam(model.parameters(), lr=settings.lr),
        criterion=torch.nn.CrossEntropyLoss(), train_mb_size=settings.batch_size, train_epochs=settings.epochs,
        eval_mb_size=512, device="cpu",
        # an empty evaluator: the default one logs every iteration to stdout
        evaluator=EvaluationPlugin(),
    )
    if name == "naive":
        return Naive(**common)
    if name == "ewc":
        return EWC(ewc_lambda=1000.0, **common)
    if name == "replay":
        return Replay(mem_size=200, **common)
    if name == "lwf":
        return LwF(alpha=1.0, temperature=2.0, **common)
    raise ValueError(f"unknown baseline {name!r}; choose from {', '.join(BASELINES)}")


def run_avalanche(name: str, tasks: list[StreamTask], ops: Sequence[Op], seed: int, settings: MlpSettings,
                  reference: TorchClassifier, step: Step) -> Run:
    from avalanche.benchmarks import tensors_benchmark

    # One experience per task, all task label 0: a single head, as the
    # class-incremental strategies see it. (LwF breaks on the streams of
    # class_incremental_benchmark; tensor benchmarks carry what it needs.)
    benchmark = tensors_benchmark(
        train_tensors=[[torch.as_tensor(t.X), torch.as_tensor(t.y)] for t in tasks],
        test_tensors=[[torch.as_tensor(t.X_probe), torch.as_tensor(t.y_probe)] for t in tasks],
        task_labels=[0] * len(tasks),
    )
    d = n_features(tasks)
    retained: list[int] = []
    snapshots, seconds = [], []
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="No loggers specified")
        model = mlp(d, settings.hidden, seed)
        learner = avalanche_strategy(name, model, settings)
        for i, op in enumerate(ops):
            started = time.perf_counter()
            # avalanche 0.6's replay plugin calls its own deprecated API on every step, and its
            # deprecation decorator re-enables the warning whatever the filters say: keep it off the console
            with contextlib.redirect_stderr(io.StringIO()):
                if op.learns:
                    retained.append(op.task)
                    learner.train(benchmark.train_stream[op.task])
                else:
                    # no way to unlearn: start over on the retained stream, in learn order
                    retained.remove(op.task)
                    model = mlp(d, settings.hidden, seed)
                    learner = avalanche_strategy(name, model, settings)
                    for k in retained:
                        learner.train(benchmark.train_stream[k])
            seconds.append(time.perf_counter() - started)
            snapshots.append(classifier(frozen_copy(model), tasks))
            step(name, i)
    return classifier_run(name, tasks, ops, seed, snapshots, seconds, reference)
