"""The study database's URL as given (--storage, else the environment variable
RNN_RESEARCH_STORAGE, which keeps a password off command lines, shell histories and job files)
and as shown (its password masked, wherever a URL is printed or written)."""
import os
import re

ENVIRONMENT_VARIABLE = "RNN_RESEARCH_STORAGE"


def given_url(flag_value: str | None) -> str | None:
  """`flag_value` (--storage) if set, else $RNN_RESEARCH_STORAGE if set, else None."""
  return flag_value or os.environ.get(ENVIRONMENT_VARIABLE) or None


def masked(url: str) -> str:
  """`url` with its password shown as ***, as SQLAlchemy renders it; one SQLAlchemy cannot parse
  (or read, where it is not installed) with all before its host's '@' masked."""
  try:
    from sqlalchemy.engine import make_url  # pylint: disable=g-import-not-at-top
    return make_url(url).render_as_string(hide_password=True)
  except Exception:  # pylint: disable=broad-except  (ImportError, or ArgumentError if unparsable)
    return re.sub(r"^([^:/]*://)?[^/]*@", r"\1***@", url)


def masked_argument(argument: str) -> str:
  """A command-line argument with the password of a URL in it masked: `--storage=URL` or URL."""
  flag, equals, value = argument.partition("=")
  if equals and "://" in value and "://" not in flag:
    return flag + equals + masked(value)
  return masked(argument) if "://" in argument else argument
