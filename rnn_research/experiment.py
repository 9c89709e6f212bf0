"""An experiment file (experiments/<name>.py) as a module, and one trial config from it.

An experiment is a study (a config with a `study` declaration, rnn_research.declaration:
odyssey, rnn_vs_transformer, a researcher's own), a set of variants (`variant_config(config,
name)`: the task-shape experiments) or a plain trial config (the keys of
`train.default_config()`).
"""
import importlib.util
import pathlib


def load_module(path: str):
  """The experiment file at `path` (e.g. experiments/odyssey.py) as a module."""
  spec = importlib.util.spec_from_file_location(pathlib.Path(path).stem, path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def one_trial(module, config, variant: str | None = None, seed: int = 0):
  """The trial config of `variant` (default: the first of config.variants): a study's trial
  with params drawn from its search space by Optuna's random sampler seeded with `seed`, a
  variant's config, or `config` itself when it is a trial config."""
  is_study = "study" in config
  if is_study or hasattr(module, "variant_config"):
    variant = variant or config.variants[0]
    if variant not in config.variants:
      raise ValueError(f"variant must be one of {list(config.variants)}, got {variant!r}")
  elif variant is not None:
    raise ValueError(f"the experiment has no variants; got variant {variant!r}")
  if is_study:
    import optuna  # pylint: disable=g-import-not-at-top
    from rnn_research import declaration  # pylint: disable=g-import-not-at-top
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    params = study.ask(declaration.of(config).distributions()).params
    return declaration.trial_config(module, config, variant, params, seed)
  if hasattr(module, "variant_config"):
    return module.variant_config(config, variant)
  return config
