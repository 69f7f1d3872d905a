"""Faults during a run: corrupted data found mid-run is named (step, batch, site, data point), the last
good checkpoint survives and resuming from it loses nothing; memory-mapped data stays mapped."""

import numpy as np
import pytest
import torch

import ppvae
from ppvae.infer.svi.train import TrainConfig, batch_at
from ppvae.models import GMM
from ppvae.runs.checkpoint import latest_checkpoint, load_checkpoint

FIT = dict(guide="auto_normal", steps=10, batch_size=68, seed=4, lr=0.05, progress=False)  # 4 batches/epoch


def _config():
    return TrainConfig(**{k: v for k, v in FIT.items() if k != "progress"}).validate(272)


@pytest.fixture
def npy(tmp_path, faithful):
    path = tmp_path / "faithful.npy"
    np.save(path, faithful.x.numpy().astype(np.float32))
    return path


@pytest.mark.filterwarnings("ignore:Encountered NaN")
def test_corruption_of_a_mapped_file_mid_run_is_named_and_loses_nothing(npy, tmp_path):
    """After step 6 one row of the memory-mapped file is overwritten with NaN on disk (so load-time
    validation never saw it). Step 7 (batch 3 of epoch 1) holds that row and fails, naming it; the
    step-4 checkpoint is intact, and resuming from it on repaired data equals an uninterrupted run."""
    data = ppvae.load_dataset(str(npy), mmap=True)
    point = int(batch_at(data, _config(), 7)[0].index[5])
    clean = np.load(npy)[point].copy()

    def corrupt_file(trainer):
        if trainer.step == 6:
            on_disk = np.load(npy, mmap_mode="r+")
            on_disk[point, 1] = np.nan
            on_disk.flush()

    ck = str(tmp_path / "ck")
    with pytest.raises(ppvae.NonFiniteError) as err:
        ppvae.fit(GMM(K=2), data, checkpoint_dir=ck, checkpoint_every=4, callbacks=[corrupt_file], **FIT)
    message = str(err.value)
    assert "at step 7 (batch 3 of epoch 1)" in message
    assert "model:obs" in message and f"non-finite data at point(s) {point};" in message
    state = load_checkpoint(latest_checkpoint(ck))  # the last good checkpoint, readable
    assert state["step"] == 4 and all(np.isfinite(state["losses"]))

    on_disk = np.load(npy, mmap_mode="r+")
    on_disk[point] = clean
    on_disk.flush()
    repaired = ppvae.load_dataset(str(npy), mmap=True)
    resumed = ppvae.fit(GMM(K=2), repaired, resume=ck, **FIT)
    reference = ppvae.fit(GMM(K=2), ppvae.load_dataset(str(npy)), **FIT)
    assert resumed.history["loss"] == reference.history["loss"]
    a, b = resumed.guide.state_dict(), reference.guide.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in b)


def test_inf_injected_into_one_batch_names_the_batch_and_site(faithful):
    data = ppvae.Dataset(faithful.x.clone(), name="faithful")
    point = int(batch_at(data, _config(), 2)[0].index[0])

    def corrupt(trainer):
        if trainer.step == 2:
            trainer.data.x[point, 0] = float("inf")

    expected = rf"at step 2 \(batch 2 of epoch 0\); .*model:obs.*point\(s\) {point};"
    with pytest.raises(ppvae.NonFiniteError, match=expected):
        ppvae.fit(GMM(K=2), data, callbacks=[corrupt], **FIT)


def test_a_memory_mapped_data_set_stays_mapped_during_fit(npy):
    """The trainer reads only minibatches from the mapped file (no full copy), and the fit equals one on
    the same values held in memory."""
    data = ppvae.load_dataset(str(npy), mmap=True)
    mapped = np.load(npy, mmap_mode="r")
    assert data.meta["mmap"] and data.x.dtype == torch.float32
    seen = []

    def record(trainer):
        seen.append(trainer.data.x.data_ptr())

    fit = ppvae.fit(GMM(K=2), data, callbacks=[record], **FIT)
    assert set(seen) == {data.x.data_ptr()}  # the trainer's data is the mapping itself
    assert data.to("cpu") is data
    in_memory = ppvae.fit(GMM(K=2), ppvae.Dataset(torch.from_numpy(np.array(mapped))), **FIT)
    assert fit.history["loss"] == in_memory.history["loss"]
