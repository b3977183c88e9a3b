"""qidbm.allocator (glibc thresholds for the FID network's big per-batch buffers) and the lazy package.

Its speed effect is measured by ``bench/fid_speed.py`` (with and without ``QIDBM_DEFAULT_MALLOC=1``);
page-fault counts of a synthetic probe vary from run to run, so the tests check the contract.
"""

import subprocess
import sys

import pytest


def _run(code: str, **env: str) -> str:
    import os

    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, **env})
    return out.stdout.strip()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_the_thresholds_are_set_once_unless_opted_out():
    code = "from qidbm.allocator import reuse_freed_memory as r; print(r(), r())"
    assert _run(code, QIDBM_DEFAULT_MALLOC="0") == "True True"  # glibc accepted both settings
    assert _run(code, QIDBM_DEFAULT_MALLOC="1") == "False False"


def test_the_command_module_imports_without_torch():
    # so that qidbm.cli.main can set the allocator up before torch loads
    assert _run("import sys, qidbm.cli; print('torch' in sys.modules)") == "False"


def test_lazy_package_names():
    import qidbm
    from qidbm.models import DBM

    assert qidbm.DBM is DBM and "QiDBM" in dir(qidbm)
    assert _run("import qidbm; print(qidbm.quantum.softplus.__name__)") == "softplus"  # subpackages load too
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        qidbm.nope
