"""Throughput: how fast each candidate runs, relative to a copy timed in the same run.

:func:`run_throughput` times every candidate x dtype x device x mode (eager,
torch.compile) x pass (``forward``, ``forward+backward``) x size x input kind
(``inputs``: ``log-uniform``, ``realistic``) and returns one row per
combination (:data:`COLUMNS` first, then :data:`EXTRA_COLUMNS`); :func:`write_throughput`
writes ``throughput.csv``, ``throughput.json`` and ``env.json``.

How a row is measured (:func:`time_call`):

- Inputs, ``log-uniform``: ``size`` points, each column log-uniform over the family's
  domain (``k`` a log-uniform integer), drawn in float64 from a generator seeded by (suite
  seed, family, size) and cast to the dtype (round to nearest, as
  :func:`ztbench.core.dtypes.round_to`). The domain is clipped to the dtype's normal range
  (float16: ``[6.1e-5, 65504]``), so inputs are finite and non-zero in every dtype. The
  same float64 points are used for every dtype of a device (CPU and CUDA generators
  differ). ``realistic``: single-cell-like values, log mu uniform in [0, 2], log theta
  uniform in [0.5, 2.5], k = 1 + Poisson(mu) (:func:`~.inputs.realistic_inputs`), seeded
  the same way: what a training loop on UMI counts sees, where the whole domain's hard
  regions are rare.
- ``forward``: the candidate under ``torch.no_grad()``. ``forward+backward``: parameters
  with ``requires_grad``, the candidate, then ``torch.autograd.grad(value.sum(), params)``.
- Warm-up: the first call (which compiles, in ``compile`` mode) plus ``warmup`` more calls
  are not timed. ``compile_s`` is the first call's time minus the steady-state median:
  torch.compile's compilation time where it compiled (``dynamic=True`` graphs are cached
  per candidate, grad mode and dtype, so the first size of each compiles and later sizes
  reuse it, showing ~0), and 0.0 in eager mode.
- Rounds: each round runs ``calls_per_round`` calls (grown until a round lasts at least
  ``min_round_s``, so tiny sizes are not timer noise) and gives the time per call; rounds
  continue until ``budget_s`` is spent, at least ``min_rounds`` and at most
  ``max_rounds``. ``median_s`` and ``min_s`` are over rounds. CPU is timed with
  ``time.perf_counter`` (torch CPU ops are synchronous); CUDA with CUDA events recorded
  around the round after a ``torch.cuda.synchronize``.
- Copy floor: in the same run, on the same device and dtype, ``dst.copy_(src)`` of as many
  elements as half the bytes the candidate must move at least (read every input once,
  write every output once: ``forward`` reads k and the parameters and writes the value;
  ``forward+backward`` also writes one gradient per parameter), so the copy reads and
  writes the same total number of bytes. ``cost_vs_copy = median_s / copy_median_s``.
- ``cost_vs_naive = median_s / naive_median_s``, with the family's ``naive`` candidate in
  the same dtype, device, mode, pass, size and inputs (NaN where naive was not timed). Both ratios
  are cost multiples: above 1 is slower. The element-rate ratio is the reciprocal.
- ``peak_bytes_per_element``: the high-water mark of memory allocated during one call,
  above what was allocated before it (the inputs are not counted), divided by ``size``.
  CUDA: ``torch.cuda.max_memory_allocated``. CPU (Linux): the process's resident
  high-water mark (``VmHWM``), reset before the call, after the C allocator gave its free
  memory back; O(1) in the number of allocations. It resolves pages (4 KiB): a call of a
  few thousand elements may allocate inside memory already resident and read 0.
  Peers: ``tracemalloc`` (numpy's allocations; memory of a subprocess such as Rscript is
  not seen). The column ``peak_memory_measure`` names the method of each row.
- Threads: ``torch.set_num_threads(threads)`` for the whole run, recorded in every row.
  The system load averages at the start and end of the run are recorded in
  ``throughput.json`` (``settings.loadavg``): timings taken while other processes compete
  for the cores are not comparable.
- Peers (numpy float64, CPU, no autograd) run forward, float64, CPU, eager only, and only
  at sizes up to ``peer_max_size`` (default 10^4: a peer such as R through Rscript must
  not dominate the run). Other combinations are rows with status ``unsupported`` or
  ``skipped`` and the reason.

Whatever a candidate cannot do (dtype or device not supported, missing kernel,
torch.compile failure, an exception while running) becomes a row with status
``unsupported`` or ``failed`` and the reason; the run goes on.

Modules: :mod:`.config` (settings, defaults, result types; torch-free), :mod:`.inputs`
(inputs and calls), :mod:`.timing`, :mod:`.runner` (:func:`~.runner.run_throughput`,
:func:`~.runner.plan`), :mod:`.output` (:func:`~.output.write_throughput`).
"""
