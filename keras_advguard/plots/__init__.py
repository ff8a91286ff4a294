"""Figures drawn from the library's own outputs, as Display objects.

Each figure follows scikit-learn's Display pattern
(`sklearn.metrics.RocCurveDisplay`): a class that stores the data to draw,
a `.plot(ax=None, ...)` method that draws it and stores the matplotlib
artists in trailing-underscore attributes (`ax_` or `axes_`, `figure_`,
`line_`, ...), and `from_*` class methods that build the data from the
library's outputs and plot in one call. The `plot_*` functions are
shortcuts for a `from_*` method.

matplotlib is imported inside the functions that draw, so importing this
package does not import it. In scripts without a display, select the `Agg`
backend (`MPLBACKEND=Agg` or `matplotlib.use("Agg")`).

One module per figure family:

- `roc`: `DetectionRocDisplay` (one ROC curve, or the mean over folds:
  `plot_mean_roc`) and `AttackRocDisplay` (one curve per attack);
- `entropy`: `FeatureResponseDisplay`, `EntropyHistogramDisplay`
  (Amirian et al., Fig. 3 and 4a);
- `medoids`: `ActivationTsneDisplay`, `plot_activation_tsne`
  (Caldelli et al., Fig. 2);
- `divergence`: `LayerDivergenceDisplay` (`metric="cosine"`: Jonas & Evans,
  Fig. 1 and 2; `metric="relative_l2"`: the sanitizer paper's Fig. 7,
  `plot_layer_divergence`);
- `tradeoff`: `TradeoffDisplay`, `plot_tradeoff` (clean vs robust accuracy).

The calculations behind the divergence figures live in
`keras_advguard.divergence` (`layer_cosine_distances`, `same_norm_noise`,
`layer_divergence`, `LayerDivergence`), re-exported here.
"""

from keras_advguard.divergence import LayerDivergence as LayerDivergence
from keras_advguard.divergence import layer_cosine_distances as layer_cosine_distances
from keras_advguard.divergence import layer_divergence as layer_divergence
from keras_advguard.divergence import same_norm_noise as same_norm_noise
from keras_advguard.plots.divergence import CosineDivergenceDisplay as CosineDivergenceDisplay
from keras_advguard.plots.divergence import LayerDivergenceDisplay as LayerDivergenceDisplay
from keras_advguard.plots.divergence import plot_layer_divergence as plot_layer_divergence
from keras_advguard.plots.entropy import EntropyHistogramDisplay as EntropyHistogramDisplay
from keras_advguard.plots.entropy import FeatureResponseDisplay as FeatureResponseDisplay
from keras_advguard.plots.medoids import ActivationTsneDisplay as ActivationTsneDisplay
from keras_advguard.plots.medoids import plot_activation_tsne as plot_activation_tsne
from keras_advguard.plots.roc import AttackRocDisplay as AttackRocDisplay
from keras_advguard.plots.roc import DetectionRocDisplay as DetectionRocDisplay
from keras_advguard.plots.roc import plot_mean_roc as plot_mean_roc
from keras_advguard.plots.tradeoff import TradeoffDisplay as TradeoffDisplay
from keras_advguard.plots.tradeoff import plot_tradeoff as plot_tradeoff

__all__ = [
    "ActivationTsneDisplay",
    "AttackRocDisplay",
    "CosineDivergenceDisplay",
    "DetectionRocDisplay",
    "EntropyHistogramDisplay",
    "FeatureResponseDisplay",
    "LayerDivergence",
    "LayerDivergenceDisplay",
    "TradeoffDisplay",
    "layer_cosine_distances",
    "layer_divergence",
    "plot_activation_tsne",
    "plot_layer_divergence",
    "plot_mean_roc",
    "plot_tradeoff",
    "same_norm_noise",
]
