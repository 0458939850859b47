import { sandboxConformance } from './conformance.js';

sandboxConformance('crun');
