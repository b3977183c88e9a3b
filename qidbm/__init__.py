"""qidbm: quantum-infused Boltzmann machines trained by DO-EM.

Models (``qidbm.models``): RBM, QRBM, GRBM, QGRBM, DBM, QiDBM; closed forms in
``qidbm.quantum``; samplers in ``qidbm.samplers``; Lightning training in
``qidbm.lightning``; data modules in ``qidbm.data``.
"""

from qidbm.checkpoint import load_checkpoint
from qidbm.models import DBM, GRBM, QGRBM, QRBM, RBM, QiDBM

__version__ = "0.1.0"
__all__ = ["RBM", "QRBM", "GRBM", "QGRBM", "DBM", "QiDBM", "load_checkpoint", "__version__"]
