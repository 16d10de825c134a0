"""The runtime layer: everything that runs a model, in one place.

Extraction, prompt tuning, evaluation, suppression, the pruning search and transfer all use
it, and none of them imports another's internals (``docs/ARCHITECTURE.md``):

- :mod:`~neurondb.runtime.model`     a loaded model (by name, path, or an object you have)
- :mod:`~neurondb.runtime.readouts`  how a label is read: a registry of strategies
- :mod:`~neurondb.runtime.templates` templates, task presets, and the one resolution rule
- :mod:`~neurondb.runtime.data`      labelled text from a name, a path or a DataFrame
- :mod:`~neurondb.runtime.encode`    templates -> token tensors, positions and slots
- :mod:`~neurondb.runtime.forward`   one forward pass with a soft prompt, and label logits
- :mod:`~neurondb.runtime.hooks`     the one FFN hook primitive (capture, replace, gradient)
- :mod:`~neurondb.runtime.batches`   the one batch iterator (length-sorted, bounded memory)
- :mod:`~neurondb.runtime.evaluate`  accuracy of a split through the same path
- :mod:`~neurondb.runtime.memory`    free memory on a device (checks before a run)
"""
