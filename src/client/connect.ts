import type { AirlockConfig } from '../config/config.js';
import { ApiClient } from './api-client.js';
import { resolveClientSettings } from './config-file.js';
import { HttpClient } from './http.js';

/** The API client of the CLI, from AIRLOCK_URL / AIRLOCK_TOKEN or the client config file. */
export async function connect(client: AirlockConfig['client']): Promise<ApiClient> {
  const settings = await resolveClientSettings(client);
  return new ApiClient(new HttpClient({ url: settings.url, token: settings.token }));
}
