import pytest
import torch

import ppvae

# The tests use tiny tensors: intra-op threads only add overhead, and on a busy 2-core machine
# oversubscription slows them by an order of magnitude.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def faithful():
    return ppvae.load_dataset("faithful")


@pytest.fixture(autouse=True)
def _fresh_param_store():
    import pyro

    pyro.clear_param_store()
    yield
    pyro.clear_param_store()


@pytest.fixture(scope="session")
def coin_tosses():
    """The three-coin textbook data 1,1,0,1,0,0,1,0,1,1 (Li 2012, example 9.1)."""
    return torch.tensor([1, 1, 0, 1, 0, 0, 1, 0, 1, 1.0]).unsqueeze(-1)
