"""Benchmarks, from the source checkout only (not part of the installed package).

The comparative bench (``lifecycle bench``): ``harness`` runs it from
``sequence`` (the L/U sequence language), ``streams`` (the data),
``reference`` (the retrain-from-scratch reference), ``runners`` and
``baselines`` (one method through a sequence), ``results`` (rows, tables)
and ``figures`` (``bench.png``). The scripts beside them are run as
``python -m bench.<name>`` or ``python bench/<name>.py``; the sequence
scripts share the parser, data loader and reference.
"""
