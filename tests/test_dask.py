"""Member training on a Dask cluster equals local training for the same seed."""
import pytest
import torch

from conftest import TINY
from ensemble import api
from members.checkpoint import load_checkpoint

distributed = pytest.importorskip("distributed", reason="the 'distributed' extra is not installed")


def test_dask_cluster_equals_local(tmp_path, subset_path):
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None)
    try:
        remote = tmp_path / "dask"
        results = api.train(data=str(subset_path), run=str(remote), members="soil,sand", jobs=2,
                            backend="dask", scheduler=cluster.scheduler_address, **TINY)
    finally:
        cluster.close()
    assert all(r["finished"] for r in results), results
    local = tmp_path / "local"
    api.train(data=str(subset_path), run=str(local), members="soil,sand", jobs=2, backend="loky", **TINY)
    for name in ("soil", "sand"):
        a = load_checkpoint(remote / "members" / name / "latest.pt")["model"]
        b = load_checkpoint(local / "members" / name / "latest.pt")["model"]
        assert all(torch.equal(a[k], b[k]) for k in a), name


def test_unreachable_scheduler_is_a_clear_error(tmp_path, subset_path):
    from ensemble.core.errors import EnsembleError

    with pytest.raises(EnsembleError, match="cannot reach the Dask scheduler"):
        api.train(data=str(subset_path), run=str(tmp_path / "r"), members="soil", jobs=2, backend="dask",
                  scheduler="tcp://127.0.0.1:9", **TINY)
