"""posecli: top-down human pose estimation with HRNet heatmap models, MMPose-exact."""

__version__ = "0.1.0"
