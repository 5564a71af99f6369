"""Operations: the schedules and sensors that run tokenbill's jobs without anyone watching.

``schedules.py`` runs each grain on the clock (and re-closes the last days nightly);
``sensors.py`` re-runs hours whose S3 objects changed after ingestion and rolls their days up.
"""
