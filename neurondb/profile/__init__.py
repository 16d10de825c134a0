"""Neuron profiles (SPEC §8): corpus-scale statistics reduced on the device while extracting.

* :mod:`~neurondb.profile.keys`: the strict total order of top/bottom-K entries (value, then
  ``(example_id, position)`` ascending) as one int64 key per entry;
* :mod:`~neurondb.profile.edges`: the histogram edges of a run (one rule, recorded once);
* :mod:`~neurondb.profile.reduce`: the torch accumulator that lives on the model's device;
* :mod:`~neurondb.profile.state`: its NumPy state, exact merging, the shard file;
* :mod:`~neurondb.profile.quantiles`: quantiles from the histogram, with their error bound;
* :mod:`~neurondb.extract.profiling`: the few calls the extraction loop makes;
* :mod:`~neurondb.profile.read`: merged run states, the ``neuron_profile``/``neuron_top``
  tables and the ``Store.profile*()`` methods;
* :mod:`~neurondb.query.correlate_neurons`: Pearson correlation between the neurons of two runs
  (SPEC §9).

Reading (``state``, ``quantiles``, ``read``, ``pearson``) never imports torch.
"""
