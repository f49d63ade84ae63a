#!/bin/bash
docker image inspect mini:1 >/dev/null 2>&1
