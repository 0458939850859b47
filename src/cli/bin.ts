#!/usr/bin/env -S node --max-semi-space-size=4 --v8-pool-size=1
import { main } from '../main.js';

process.exitCode = await main(process.argv.slice(2));
