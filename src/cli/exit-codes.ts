/** Exit codes of `airlock sandbox` and `airlock run` (DESIGN §6); defined with the job lifecycle. */
export { EXIT, exitStatusOf as exitCodeOf } from '../jobs/exit-status.js';
