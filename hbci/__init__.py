"""HBCI text-video retrieval: model, data, training and evaluation (needs the `train` extra).

Importing this package only defines names: `import hbci.runtime` must never pull in torch.
"""

__version__ = "0.1.0"
