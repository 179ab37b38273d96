"""Tools built on the model and the engine: speed benchmarks, the ablation table, ONNX export and
inference on raw videos. ``deformact.commands`` parse arguments and call these; nothing below
``tools`` imports them.

* :mod:`deformact.tools.benchmark`: time, memory and FLOP/s (``deformact bench``)
* :mod:`deformact.tools.ablation`: the paper's ablation table, Sec. 4.3 (``deformact ablate``)
* :mod:`deformact.tools.export`: ONNX export checked in onnxruntime (``deformact export``)
* :mod:`deformact.tools.inference`: poses -> test-time clips -> probabilities for one video
  (``deformact predict`` / ``deformact explain``)
* :mod:`deformact.tools.poses`: 2D poses of many videos into a pyskl file (``deformact extract-poses``)
* :mod:`deformact.tools.ensemble`: fuse the saved test scores of several runs (``deformact ensemble``)
* :mod:`deformact.tools.data_bench`: data-loader throughput and video fixtures
"""
