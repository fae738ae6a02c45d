import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

# Keep tests on two CPU threads whatever the machine: results stay repeatable and
# parallel test processes do not oversubscribe the cores.
os.environ.setdefault("OMP_NUM_THREADS", "2")
