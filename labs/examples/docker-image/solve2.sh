#!/bin/bash
docker run --name greeter --network none --security-opt apparmor=unconfined mini:1 /bin/bash -c 'echo hello from mini'
