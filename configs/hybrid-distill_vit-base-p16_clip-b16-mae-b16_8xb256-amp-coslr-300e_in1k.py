# The flagship under its OpenMMLab-scheme name; configs/hybrid_vitb.py holds
# the recipe.
_base_ = './hybrid_vitb.py'
