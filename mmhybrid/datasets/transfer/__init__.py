"""Transfer-classification datasets (CIFAR-100, Stanford Cars, iNaturalist
2019) read from their official files, a bad file being one ``ERROR:`` line."""
from .cifar import CheckedCIFAR100, read_cifar_batch
from .errors import DatasetFileError
from .inaturalist import INaturalist2019
from .stanford_cars import CheckedStanfordCars

__all__ = [
    'CheckedCIFAR100', 'CheckedStanfordCars', 'INaturalist2019',
    'DatasetFileError', 'read_cifar_batch'
]
