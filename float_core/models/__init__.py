"""FLOAT networks. Module attribute names match the released checkpoint's state-dict keys.

- :mod:`.stylegan`            StyleGAN2 building blocks (EqualLinear, ModulatedConv2d, FIR filters, ...)
- :mod:`.motion_autoencoder`  motion latent auto-encoder (paper Sec. 4.1, A.1)
- :mod:`.fmt`                 flow matching transformer (paper Sec. 4.2, Fig. 3)
- :mod:`.conditions`          wav2vec2 audio features and speech-emotion classifier (Sec. 4.2)
- :mod:`.float_model`         the container whose ``state_dict()`` has the 947 keys of ``float.pth``
"""
