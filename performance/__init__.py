"""Performance prediction (AIO-P): how good is an arch without training it. Computational graphs of models
(``graph``), zero-cost proxies (``proxies``), performance datasets (``perfdata``) collected by training archs
(``collect``) or pseudo-labelled on a shared head (``pseudolabel``), and the predictors fitted on them
(``predictors``)."""
