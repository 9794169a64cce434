"""Data: SynthEndo, your own WLI/NBI folders, leakage-free folds and unpaired grouping.

Every loader ends in :class:`~pagkd_lite.data.imageset.ImageSet` (uint8 images, labels and
lesion/patient ids of one modality); nothing here knows about models or losses.
"""
