"""What the window shows: five panels that draw the numpy results they are given.

``classification``  the input with the crop the network sees, and the predictions
``network``         the network's modules, and the shown module's branches as channel grids
``overlays``        one channel, and Grad-CAM, laid over the crop
``workspace``       the panels in three columns, and what links them
"""

from .classification import InputPanel, PredictionsPanel
from .network import BranchView, NetworkPanel
from .overlays import ChannelPanel, GradCamPanel
from .workspace import Workspace

__all__ = ["BranchView", "ChannelPanel", "GradCamPanel", "InputPanel", "NetworkPanel",
           "PredictionsPanel", "Workspace"]
