"""Training on a Dask cluster equals local training for the same seed, members and baseline of one plan alike."""
import pytest
import torch
from conftest import TINY

from ensemble.recipe import TrainOptions
from ensemble.train import train_networks
from members.checkpoint import load_checkpoint

distributed = pytest.importorskip("distributed", reason="the 'distributed' extra is not installed")

NAMES = ["soil", "sand", "baseline"]


def test_dask_cluster_equals_local(tmp_path, subset_path, monkeypatch):
    """Two members and the baseline, one plan dispatched together: on the cluster and on two local workers, each
    network gets one torch thread (the local rule pinned to one core), so the weights are bitwise equal."""
    import members.parallel

    monkeypatch.setattr(members.parallel, "machine_cores", lambda: 1)
    options = TrainOptions(**TINY, jobs=2, device="cpu")
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None)
    try:
        remote = tmp_path / "dask"
        results = train_networks(NAMES, data=str(subset_path), run=str(remote),
                                 options=options.replace(backend="dask", scheduler=cluster.scheduler_address))
    finally:
        cluster.close()
    assert [r["name"] for r in results] == NAMES and all(r["finished"] for r in results), results
    local = tmp_path / "local"
    train_networks(NAMES, data=str(subset_path), run=str(local), options=options)
    for path in ("members/soil", "members/sand", "baseline"):
        a = load_checkpoint(remote / path / "latest.pt")["model"]
        b = load_checkpoint(local / path / "latest.pt")["model"]
        assert all(torch.equal(a[k], b[k]) for k in a), path
    assert load_checkpoint(remote / "baseline" / "latest.pt")["model_config"]["width"] > 4  # matched to the members


def test_unreachable_scheduler_is_a_clear_error(tmp_path, subset_path):
    from ensemble import api
    from ensemble.core.errors import EnsembleError

    with pytest.raises(EnsembleError, match="cannot reach the Dask scheduler"):
        api.train(data=str(subset_path), run=str(tmp_path / "r"), members="soil", jobs=2, backend="dask",
                  scheduler="tcp://127.0.0.1:9", **TINY)
