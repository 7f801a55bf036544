"""The bottom layer: names and formats two sides must agree on (the model server and the
operator's queries; the operator and the objects it reads back). It imports nothing of ours.

* :mod:`modelwarden.contract.kubernetes`: our API group, labels and annotations;
* the serving metrics contract, written by the model server (``serving.monitor``, or any server
  using it) and read by the operator (``metrics.queries``, ``analysis.reference``):
  :mod:`~modelwarden.contract.metrics` (metric and label names, latency buckets, how ``le`` edges
  and class labels become label strings), :mod:`~modelwarden.contract.reasons` (the ``reason``
  label of rejected requests) and :mod:`~modelwarden.contract.profile` (the profile.json schema).
  A name spelled differently on the two sides would not fail, it would silently find no data;
  docs/metrics.md and docs/profile.md document it for servers in other languages.
"""
