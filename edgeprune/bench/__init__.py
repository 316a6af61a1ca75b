"""Benchmarking and prediction: measure on the host or a device over ssh, predict with a cost model,
check a target's budget.

- :func:`edgeprune.bench.host.measure_host`  - fresh-process measurements on this machine
- :func:`edgeprune.bench.remote.measure_remote` - the same on a device over ssh (``measure_adb``: Android)
- :func:`edgeprune.bench.costmodel.predict` - calibrated roofline prediction for a target profile
- :func:`edgeprune.bench.hostcal.calibrate_host` - calibrate the cost model on this machine (built-in models)
- :func:`edgeprune.bench.remote.calibrate_remote` - micro-benchmark a device into a measured profile
- :func:`edgeprune.bench.budget.check_budget` - compare evidence with a target's budget

``runner.py`` is standalone (numpy + one runtime) so it can be copied to a device.
"""

