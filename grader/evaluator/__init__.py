"""The trusted evaluator: a fresh process running only this package's code re-runs the captured
graph of the graded test pass on the inputs that pass fed it, checks those inputs against the
official test images, and lists what the graph is made of.

A leaf package: it imports torch and the standard library (and numpy, torch's own) and nothing
else of the grader, so no student-writable path is ever on its import path. run/evaluate.py starts
it as ``python -I grader/evaluator/__main__.py --spec SPEC TEST_IMAGES [TRAIN_IMAGES]`` (SPEC: the
images' geometry and class count, ``key.ImageSpec``), in a sandbox of its own when the run is
sandboxed (run/launch.py ``start_evaluator``: no network, a read-only system, the official images
and nothing of any submission). The capture comes on standard input (bytes
the grader read from the kernel's folder, capped) and one JSON object goes to standard output.
Nothing is unpickled: the graph is torch.export's JSON, checked op by op before torch deserializes
it, and every tensor is raw bytes described by the manifest.

The modules, in the order a capture meets them:

- ``manifest``: the capture's manifest and raw tensors (``Refused``: why a capture is not run);
- ``sanitize``: the graph's JSON checked before torch's deserializer reads it;
- ``rebuild``: the graph deserialized with its tensors, and its facts (``flow``: what uses what);
- ``inputs``: which official test image each row is, under one preprocessing for the whole pass;
- ``predict``: the graph's classes on the rebuilt rows (and on a secret sample of training images);
- ``answer``: all of it for one capture, the JSON the grader reads (judge/recompute.py);
- ``ops`` and ``key``: the op tables, and the images' geometry and content key, which the
  architecture rule (static/rules/linear_layers.py), the probe (probe/content.py) and the grader
  (``ImageSpec``) import from here. Both are cheap to import (``ops``: nothing; ``key``: torch
  where used): this file imports nothing.
"""
