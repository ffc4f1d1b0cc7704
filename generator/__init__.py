"""Lens gallery generator: MACO feature visualizations and CRAFT concepts for every ImageNet class.

Modules, in the order data flows: config -> classes -> models -> spectrum, maco, nmf, sobol, craft
-> quality -> store -> plan -> workers -> site -> cli.
"""

__version__ = "0.1.0"
