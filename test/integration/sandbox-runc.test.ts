import { sandboxConformance } from './conformance.js';

sandboxConformance('runc');
