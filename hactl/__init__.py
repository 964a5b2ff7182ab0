"""hactl: keep a highly-available kubeadm control plane in the state a YAML spec describes.

This package's top level stays import-light: the lab's stand-ins import ``hactl.lab``
under the node's plain Debian Python, which has only the standard library,
``cryptography`` and ``yaml``.
"""

__version__ = "0.1.0"
