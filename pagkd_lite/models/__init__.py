"""Models: the teacher and student classifiers, their SimCLR start, and the GPU switches.

:class:`~pagkd_lite.models.classifier.Classifier` is a timm backbone, a 1x1 embedding that
gives the tokens GKD-Den aligns, average pooling and a linear head.
"""
