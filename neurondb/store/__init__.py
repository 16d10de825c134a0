"""The store: a directory of Parquet tables and dense HDF5 tensors.

Layout (schema version 1)::

    STORE/
      manifest.json            format, schema_version, model identity and shape, libraries
      runs/<run>/              one run = one dataset split under one template/prompt
        run.json, run.parquet  the run's metadata (one row)
        examples.parquet       run, split, example_id, idx, text, label, pred, correct,
                               n_tokens, label_logits (list<float32>)
        tokens.parquet         run, example_id, stack, position, token_id, token, kind
        rows.parquet           run, stack, row, example_id, position, slot   (captured rows)
        activations.h5         /<stack>/<layer:03d>  [rows, d_ff]  (float16|bfloat16|float32)
        gradients.h5           same shape as activations, when captured with --grad
        stats.h5               running statistics per slot (mode "stats"), see RunningStats
      results/                 analyses written by neurondb (rankings, masks, ...)

A run is written under ``runs/.partial-*`` and renamed into place when complete, so a
reader never sees a partial run.
"""

from neurondb.store.errors import StoreError
from neurondb.store.layout import SCHEMA_VERSION
from neurondb.store.reader import Store, open_store
from neurondb.store.stats import RunningStats

__all__ = ["SCHEMA_VERSION", "Store", "StoreError", "RunningStats", "open_store"]
