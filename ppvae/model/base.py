"""The model base class: a generative story plus what every model would otherwise repeat.

A ppvae model subclasses :class:`Model` and writes only its generative story in ``forward(batch)``
(priors, plates, sample sites, the observed data) with hyperparameters in ``__init__``. The engine
supplies:

* the **data plate** (:meth:`Model.data_plate`): ``pyro.plate("data", N, subsample=index)``, so a minibatch of M
  points has its likelihood scaled by N/M (Hoffman et al. 2013, "Stochastic Variational Inference", eq. 8) and
  every later capability (per-point evaluation, MCMC, ArviZ) finds the data dimension by the plate's name;
* hyperparameter bookkeeping (``model.hparams``, recorded from the constructor call, so a saved run
  rebuilds its model) and **registration by name** (:func:`register_model`; a user's model may also be
  named by import path, :func:`import_model`, or published by a package under the ``ppvae.models``
  entry-point group, see :mod:`ppvae.model.importing`);
* enumeration of discrete latents (``config_enumerate``), summed out exactly by ``TraceEnum_ELBO``.

Example (a mixture of Poissons, see ``examples/custom_model.py``)::

    @register_model("poisson_mix", "mixture of K Poissons")
    class PoissonMixture(Model):
        def __init__(self, K: int = 2):
            super().__init__()
            self.K = K

        def forward(self, batch):
            w = pyro.sample("weights", dist.Dirichlet(batch.x.new_ones(self.K)))
            with pyro.plate("components", self.K):
                rate = pyro.sample("rate", dist.Gamma(batch.x.new_tensor(2.0), 0.1))
            with self.data_plate(batch):
                z = pyro.sample("z", dist.Categorical(w))
                pyro.sample("obs", dist.Poisson(rate[z]).to_event(1), obs=batch.x)
"""

from __future__ import annotations

import abc
import functools
import inspect
import os
import sys
import warnings
from typing import Any, Callable, ClassVar

import pyro
import torch
from pyro import poutine
from pyro.infer import config_enumerate
from pyro.nn import PyroModule
from pyro.poutine.util import site_is_subsample

from ppvae._util.params import local_params
from ppvae._util.validation import PPVAEError, check_tensor, one_line
from ppvae.data.loaders import Batch, Dataset
from ppvae.model.capabilities import (
    CAPABILITIES,
    Capability,
    ClosedFormEM,
    ClosedFormPotential,
    ConjugateExponential,
    CoordinateAscentVI,
    ExactPosterior,
    Mixture,
    Reports,
    capabilities_of,
    check_declared,
    check_mask_support,
    require,
)
from ppvae.model.importing import is_import_spec, load_object, model_entry_points
from ppvae.model.structure import (
    DATA_PLATE,
    ModelStructure,
    as_batch,
    check_data_structure,
    data_plate,
    is_local,
    latent_sites,
    probe_batch,
    structure_key,
)

__all__ = ["Model", "ModelStructure", "latent_sites", "is_local", "register_model", "get_model_class", "list_models",
           "build_model", "import_model", "model_import_path", "DATA_PLATE", "Capability", "ClosedFormEM",
           "ClosedFormPotential", "ExactPosterior", "Mixture", "CoordinateAscentVI", "ConjugateExponential",
           "Reports", "CAPABILITIES",
           "require", "capabilities_of"]


class _ModelMeta(type(PyroModule), abc.ABCMeta):
    """PyroModule's metaclass with :class:`abc.ABCMeta`, so a model can list capability mixins as bases."""


class Model(PyroModule, metaclass=_ModelMeta):
    """Base class of ppvae models. Subclasses implement ``forward(self, batch: Batch)``.

    Hooks every model has, with defaults a subclass may override:

    * ``guide(self, batch)``: the model's own guide, used with ``guide="model"`` (no default).
    * ``setup(self, data: Dataset)``: called once by the trainer before fitting, with the full data
      set, to validate it (call ``super().setup(data)``) and to register data-dependent constants
      as buffers (they are saved with the fit).
    * ``init_values(self, data, generator) -> dict``: initial values of latent sites for guides.
    * ``data_structure``: what the rows are, "points" (i.i.d., the default), "groups", "sequence" or "record".

    Everything else a model can do is a **declared capability** (``ppvae/_capabilities.py``): list the
    class among the bases, ``class GMM(ppvae.Model, ppvae.ClosedFormEM, ppvae.Mixture)``, and implement its
    abstract methods. The engine and the command line test ``isinstance(model, Capability)``:

    * :class:`ClosedFormEM`: ``em_init``, ``em_step``, ``em_to_sites`` (optional ``em_responsibilities``),
      for :func:`ppvae.fit_em` and ``ppvae em``.
    * :class:`ClosedFormPotential`: ``pointwise_log_likelihood(values, x)``, log p(x_i | globals) with discrete
      locals summed in closed form, used by NUTS/HMC in place of enumeration, and optionally
      ``closed_form_potential(x, order)``, the potential and its gradient without autograd (checked against
      autograd at the first chain's start; see :mod:`ppvae.infer.mcmc.sampler`).
    * :class:`ExactPosterior`: ``posterior_guide(x, y=None)``, for :func:`ppvae.exact_posterior` and ``compare``.
    * :class:`Mixture`: ``num_components()`` (optional ``component_sites``, ``location_site``,
      ``mixture_components``): exchangeable components whose labels are aligned across draws. A model
      that does not declare it has no components, whatever its attributes are named.
    * :class:`CoordinateAscentVI`: ``fit_cavi``, ``load_cavi`` (``ppvae cavi``).
    * :class:`Reports`: ``train_defaults`` (``fit`` options the command line uses for flags left unset),
      ``fit_callbacks(data)``, ``report(fit, data, out_dir)`` (figures and metrics of ``ppvae fit``).

    The hook names are reserved: a subclass defining a capability's hook without declaring the capability is
    refused when the class is created (a ``TypeError`` naming the capability to add, or a method to rename).
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    data_kinds: ClassVar[tuple[str, ...]] = ("real", "binary", "image", "counts")
    data_structure: ClassVar[str] = "points"

    def __init__(self, name: str = ""):
        with local_params():  # the module's param state exists only if the setting is on when it is built
            super().__init__(name)

    def __call__(self, *args, **kwargs):
        with local_params():
            return super().__call__(*args, **kwargs)

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        check_declared(cls, Model.__mro__)
        check_data_structure(cls)
        if "__init__" in cls.__dict__:
            original = cls.__dict__["__init__"]

            @functools.wraps(original)
            def __init__(self, *args, **kw):
                outermost = not getattr(self, "_ppvae_in_init", False)
                object.__setattr__(self, "_ppvae_in_init", True)
                try:
                    original(self, *args, **kw)
                finally:
                    if outermost:
                        object.__setattr__(self, "_ppvae_in_init", False)
                if outermost:
                    bound = inspect.signature(original).bind(self, *args, **kw)
                    bound.apply_defaults()
                    hp = {k: v for k, v in bound.arguments.items() if k != "self"}
                    object.__setattr__(self, "_hparams", hp)

            cls.__init__ = __init__

    @property
    def hparams(self) -> dict[str, Any]:
        """The constructor arguments this model was built with (JSON-serializable values)."""
        return dict(getattr(self, "_hparams", {}))

    # -- the data plate ---------------------------------------------------------------------------
    def data_plate(self, batch: Batch, dim: int | None = None):
        """``pyro.plate("data", N, subsample=batch.index)``: iterate over the batch's points with the
        likelihood scaled by N / M (:func:`ppvae.model.structure.data_plate`)."""
        return data_plate(batch, dim)

    # -- hooks with defaults ----------------------------------------------------------------------
    def setup(self, data: Dataset) -> None:
        """Validate ``data`` for this model; subclasses extend (and call super). Clears the cached
        :meth:`structure` (setup may register data-dependent constants)."""
        self.__dict__.pop("_ppvae_structures", None)
        if data.kind not in self.data_kinds:
            hint = (f" (a file says what it holds: --data FILE:kind={self.data_kinds[0]})"
                    if "source" in data.meta else "")
            raise PPVAEError(f"data: model '{self.name or type(self).__name__}' expects data of kind "
                             f"{' or '.join(self.data_kinds)}; got '{data.kind}' data '{data.name}'{hint}")
        check_tensor(f"data '{data.name}'", data.x), check_mask_support(self, data)

    def init_values(self, data: Dataset, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """Initial values for latent sites (site name -> value); empty means the guide's default."""
        return {}

    @property
    def has_own_guide(self) -> bool:
        return callable(getattr(type(self), "guide", None))

    # -- structure --------------------------------------------------------------------------------
    def enumerated(self) -> Callable:
        """This model with every discrete latent site marked for parallel enumeration."""
        return config_enumerate(self, default="parallel")

    def trace(self, batch: Batch) -> pyro.poutine.Trace:
        """One trace of the model on ``batch`` (sampling every latent from its prior)."""
        try:
            with poutine.block(), pyro.validation_enabled(False):
                return poutine.trace(self).get_trace(batch)
        except PPVAEError:
            raise
        except Exception as exc:  # the user's own code: whatever it raised is named, in one line
            name = self.name or type(self).__name__
            raise PPVAEError(f"model '{name}': its forward raised {one_line(exc)}") from exc

    def structure(self, data) -> ModelStructure:
        """The model's :class:`~ppvae.model.structure.ModelStructure` from one trace on ``data`` (a Batch, Dataset or
        tensor): on its first two rows when ``data_structure`` is "points", else on all of it. Cached under
        :func:`~ppvae.model.structure.structure_key`; the random state is left as it was."""
        batch = as_batch(data)
        kind = self.data_structure
        key = structure_key(batch, kind)
        cache = self.__dict__.setdefault("_ppvae_structures", {})
        if key not in cache:
            with torch.random.fork_rng(devices=[]):
                cache[key] = ModelStructure.from_trace(self.trace(probe_batch(batch, kind)), kind)
        return cache[key]

    def latent_sites(self, batch: Batch) -> dict[str, dict]:
        """The model's unobserved sample sites (plate subsample sites excluded) on ``batch``, name -> site."""
        return latent_sites(self.trace(batch))

    def discrete_latent_sites(self, batch: Batch) -> list[str]:
        """Names of the unobserved sample sites with discrete support (summed out by enumeration)."""
        return list(self.structure(batch).discrete_sites)

    def check_observed(self, batch: Batch, minibatched: bool) -> None:
        """Refuse a model that observes nothing (its ELBO has no likelihood term to fit); on minibatches,
        warn when no observed site lies inside :meth:`data_plate`, since only that plate scales the
        likelihood by N/M (without it the prior weighs as if the data set had M points)."""
        with torch.random.fork_rng(devices=[]):  # a check: the caller's random stream stays as it was
            trace = self.trace(batch)
        observed = [s for s in trace.nodes.values() if s["type"] == "sample" and s["is_observed"]
                    and not site_is_subsample(s)]
        name = self.name or type(self).__name__
        if not observed:
            raise PPVAEError(f"model '{name}': no observed site; forward must call pyro.sample(NAME, dist, "
                             "obs=batch.x) for the data (there is nothing to fit)")
        if minibatched and not any(is_local(s) for s in observed):
            sites = ", ".join(f"'{s['name']}'" for s in observed)
            warnings.warn(f"model '{name}': observed site(s) {sites} lie outside the data plate while training "
                          f"on minibatches of {len(batch)} of {batch.num_total} points, so their log-likelihood is "
                          "not scaled by N/M; wrap them in `with self.data_plate(batch):`", UserWarning,
                          stacklevel=3)

    def max_plate_nesting(self, batch: Batch) -> int:
        """The deepest plate dimension used by the model (``max_plate_nesting`` for Pyro; :meth:`structure`)."""
        return self.structure(batch).max_plate_nesting


_MODELS: dict[str, type[Model]] = {}  # the registry: name -> class


def register_model(name: str, description: str = ""):
    """Class decorator: register a :class:`Model` subclass under ``name`` for the CLI and saved runs."""

    def wrap(cls):
        if not (isinstance(cls, type) and issubclass(cls, Model)):
            raise TypeError(f"register_model: expected a ppvae.Model subclass; got {cls!r}")
        if not _is_zoo(cls):  # the zoo's names are taken first, so a user's class never silently loses its name to it
            _load_zoo()
            taken = _MODELS.get(name)
            if taken is not None and _is_zoo(taken) and _source(taken) != _source(cls):
                raise PPVAEError(f"register_model: '{name}' is the name of the bundled {taken.__qualname__} "
                                 f"({taken.__module__}); register {cls.__qualname__} under another name")
        cls.name = name
        cls.description = description or (inspect.getdoc(cls) or "").split("\n")[0]
        _MODELS[name] = cls
        return cls

    return wrap


def _is_zoo(cls: type) -> bool:  # a bundled model (ppvae.models; from a checkout also ``models``)
    return cls.__module__.startswith(("ppvae.models.", "models."))


def _source(cls: type) -> tuple:  # its file and name: one file imported under two module names is one class
    return os.path.realpath(getattr(sys.modules.get(cls.__module__), "__file__", "") or ""), cls.__qualname__


def _load_zoo() -> None:
    import ppvae.models  # noqa: F401  (registers the bundled models)


def _entry_point_class(name: str, ep) -> type[Model]:
    """Load the ``ppvae.models`` entry point ``ep`` and register its class under ``name`` (ppvae/_model_import.py)."""
    try:
        cls = ep.load()
    except Exception as exc:  # an installed package's import failed: name the package and entry point
        raise PPVAEError(f"model: entry point '{name} = {ep.value}' (group ppvae.models) failed to load: "
                         f"{one_line(exc)}") from exc
    if not (isinstance(cls, type) and issubclass(cls, Model)):
        raise PPVAEError(f"model: entry point '{name} = {ep.value}' (ppvae.models) is not a Model subclass; {cls!r}")
    if not cls.name:
        register_model(name)(cls)
    _MODELS[name] = cls
    cls._ppvae_import = ep.value
    return cls


def list_models() -> dict[str, str]:
    """Registered model names with one-line descriptions: the zoo, models registered in this process and
    the ``ppvae.models`` entry points of installed packages (one that fails to load is skipped with a warning)."""
    _load_zoo()
    for name, ep in model_entry_points().items():
        if name not in _MODELS:
            try:
                _entry_point_class(name, ep)
            except PPVAEError as exc:
                warnings.warn(str(exc), UserWarning, stacklevel=2)
    return {name: cls.description for name, cls in sorted(_MODELS.items())}


def get_model_class(name: str, import_path: str | None = None) -> type[Model]:
    """The model class registered as ``name`` (zoo, this process, or a ``ppvae.models`` entry point).
    Never imports an import path: ``import_path`` (what a saved run recorded) only goes into the error."""
    _load_zoo()
    if name in _MODELS:
        return _MODELS[name]
    ep = model_entry_points().get(name)
    if ep is not None:
        return _entry_point_class(name, ep)
    if import_path or is_import_spec(name):
        spec = import_path or name
        raise PPVAEError(f"model: '{name}' is not registered in this process; it is imported from '{spec}'. "
                         f"On the command line pass --import {spec} (or give the model as {spec}); in Python call "
                         f"ppvae.import_model('{spec}') first. ppvae does not import code named in a run by itself")
    raise PPVAEError(f"model: expected one of {', '.join(sorted(_MODELS))} (or MODULE:CLASS, FILE.py:CLASS); "
                     f"got '{name}'")


def import_model(spec: str) -> type[Model] | None:
    """Import the user's model named by ``spec`` and register it: ``"module:Class"`` or ``"path/file.py:Class"``
    returns the class (registered under its ``@register_model`` name, else under ``spec`` itself);
    ``"module"`` or ``"file.py"`` imports the module only (its classes register themselves) and returns None.
    A saved run records ``spec`` as the model's import path (``model_import`` in config.json)."""
    obj = load_object(spec)
    if ":" not in spec:
        for value in vars(obj).values():  # the module's own registered classes remember where they came from
            if isinstance(value, type) and issubclass(value, Model) and value.__module__ == obj.__name__:
                value._ppvae_import = f"{spec}:{value.__qualname__}"
        return None
    if not (isinstance(obj, type) and issubclass(obj, Model)):
        raise PPVAEError(f"model: expected a ppvae.Model subclass at '{spec}'; got {obj!r}")
    if not obj.name or _MODELS.get(obj.name) is not obj:
        register_model(obj.name or spec, obj.description)(obj)
    obj._ppvae_import = spec
    return obj


def model_import_path(cls: type[Model]) -> str | None:
    """Where ``cls`` is imported from, as ``module:Class`` or the spec it was imported by; None for the zoo."""
    if cls.__module__.startswith("ppvae.models"):
        return None
    return cls.__dict__.get("_ppvae_import") or f"{cls.__module__}:{cls.__qualname__}"


def _coerce(name: str, model: str, value: Any, annotation: Any, default: Any) -> Any:
    """Convert a CLI string to the type of the constructor argument (annotation, else default)."""
    if not isinstance(value, str):
        return value
    kind = annotation if annotation is not inspect.Parameter.empty else type(default)
    if isinstance(kind, str):  # postponed annotations
        kind = {"int": int, "float": float, "bool": bool, "str": str}.get(kind.split("|")[0].strip(), str)
    try:
        if kind is bool:
            if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError(value)
            return value.lower() in ("true", "1", "yes")
        if kind is int:
            return int(value)
        if kind is float:
            return float(value)
    except ValueError:
        raise PPVAEError(f"{name}: model '{model}' expects {kind.__name__}; got '{value}'") from None
    return value


def build_model(name: str, **hparams) -> Model:
    """Construct the registered model ``name`` with hyperparameters (strings are converted to the
    constructor's types, so CLI ``KEY=VALUE`` pairs can be passed as they come)."""
    cls = get_model_class(name)
    params = {p.name: p for p in list(inspect.signature(cls.__init__).parameters.values())[1:]}
    unknown = sorted(set(hparams) - set(params))
    if unknown:
        valid = ", ".join(params) or "none"
        raise PPVAEError(f"hyperparameter: model '{name}' takes {valid}; got unknown {', '.join(unknown)}")
    kwargs = {k: _coerce(k, name, v, params[k].annotation, params[k].default) for k, v in hparams.items()}
    try:
        return cls(**kwargs)
    except PPVAEError:
        raise
    except Exception as exc:  # the user's constructor: what it raised, named in one line
        raise PPVAEError(f"model '{name}': its constructor raised {one_line(exc)} (hyperparameters "
                         f"{kwargs or 'none'})") from exc
