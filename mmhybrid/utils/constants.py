"""Input normalisation constants, in 0-255 pixel units (what OpenMMLab data
preprocessors take), defined once for the package.

Configs keep their own literal ``mean=`` / ``std=`` values: an OpenMMLab config
is plain data that users copy and edit, and a reader must see the numbers
there.
"""

#: ImageNet mean / std (RGB), as in every mmpretrain ImageNet config.
IMAGENET_MEAN = (123.675, 116.28, 103.53)
IMAGENET_STD = (58.395, 57.12, 57.375)
#: OpenAI CLIP's image normalisation (RGB), scaled from 0-1 to 0-255.
CLIP_MEAN = (0.48145466 * 255, 0.4578275 * 255, 0.40821073 * 255)
CLIP_STD = (0.26862954 * 255, 0.26130258 * 255, 0.27577711 * 255)
