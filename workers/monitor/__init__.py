"""The model monitor (``python -m workers.monitor``): live model metrics from the scores and the labels.

It joins every score (topic ``scores``, key tx_id) with the labels of its transaction as they arrive
(``fraud-labels``, days or weeks later, out of order) and publishes, per model version, the metrics
of closed windows to the compacted topic ``model-metrics`` (schemas/monitoring.py) and to Prometheus.

Pure core, no I/O: ``join.py`` (day buckets of scores, the latest word of each transaction's
labels), ``watermarks.py`` (event-time watermarks of both sources), ``windows.py`` (the one clock,
the rules of every window, lateness and bounds), ``compute.py`` (the metrics, the trainer's own).
The edge: ``decode.py``, ``active.py`` (rebuild, follow, publish), ``lease.py``, ``output.py``,
``topics.py``, ``metrics.py``, ``bundles.py`` (calibrations), ``app.py`` (Faust lifecycle, HTTP),
``config.py``.

Why one active instance, and what it costs. A window's metrics (an AUC, a precision) are not sums
that partial instances could merge: they need every row of the window in one place, and a label's
row may sit on any scores partition. So instances share a consumer group whose only partition is
the lease (lease.py): one computes, the others stand by and take over within a session timeout.
The active one keeps no state anywhere but in memory: on activation it reads both sources back
over the horizon and recomputes; since every window is a function of event time alone, what it
republishes is identical to what its predecessor published, and nothing is counted twice
(tests/monitor/test_monitor_kafka.py kills one mid-stream to show it). The price: a takeover takes
the time to re-read ``--horizon-days`` + 9 days of both topics and recompute their windows
(rebuild time grows with the horizon and the traffic), the sources must retain that long (the
monitor warns at start when they do not, and suppresses the windows it cannot rebuild rather
than publish them wrong), memory holds every score of that span (about 200 bytes each with its tx id), and one
process's throughput is the ceiling: BENCHMARKS-style numbers in tests/monitor/throughput.py.
"""
