"""Operations: the jobs, and the schedules and sensors that run them without anyone watching.

``jobs.py`` defines the four jobs (and writes their names, once); ``schedules.py`` runs each
grain on the clock (and re-closes the last days nightly); ``sensors.py`` re-runs hours whose S3
objects changed after ingestion and rolls their days up; ``watchdog.py`` fails a run whose
worker process died unseen (crash recovery); ``definitions.py`` hands them to the code
location.
"""
