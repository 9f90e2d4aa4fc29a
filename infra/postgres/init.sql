-- Runs once, on an empty data volume: Prefect's database beside MLflow's (POSTGRES_DB).
CREATE DATABASE prefect OWNER ganflow;
