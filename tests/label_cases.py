"""What the label-parser tests share: the settings they parse under, the patterns a spec
must obey, and the small builders that turn labels into a spec or an error.
"""

from __future__ import annotations

import re

from bridge.core.config import Settings
from bridge.core.model import Container, LabelError, ServiceSpec
from bridge.labels.parse import parse_labels
from tests.builders import make_container, make_settings

DNS_LABEL = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
TAG = re.compile(r"[A-Za-z0-9_.:/=-]{1,128}")
META_KEY = re.compile(r"[A-Za-z0-9_-]{1,128}")
INJECTION = 'x","Check":{"Args":["rm"]}'


SETTINGS = make_settings(port_range="11100-11999", reserved_ports="11111")
TWO_NETWORKS = {"front": "10.0.1.2", "back": "10.0.2.2"}


def spec(container: Container, s: Settings = SETTINGS) -> ServiceSpec:
    result = parse_labels(container, s)
    assert isinstance(result, ServiceSpec), result
    return result


def error(container: Container, s: Settings = SETTINGS) -> LabelError:
    result = parse_labels(container, s)
    assert isinstance(result, LabelError), result
    assert result.container == container.name
    return result


def labelled(**labels: str) -> Container:
    """A managed container with `mcp.<key>` labels; `__` in a key stands for `.`."""
    return make_container(labels={"mcp." + k.replace("__", "."): v for k, v in labels.items()})
