# The ViT-L flagship under its OpenMMLab-scheme name; configs/hybrid_vitl.py
# holds the recipe.
_base_ = './hybrid_vitl.py'
