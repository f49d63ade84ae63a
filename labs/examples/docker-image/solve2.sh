#!/bin/bash
docker run --name greeter --network none mini:1 /bin/bash -c 'echo hello from mini'
