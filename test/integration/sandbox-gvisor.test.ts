import { sandboxConformance } from './conformance.js';

sandboxConformance('gvisor');
