import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

/**
 * A small but real C project for the build benchmark: `files` translation units with a few
 * functions each, a main, and a Makefile with one rule per object — what `make -j` is for.
 */
export async function writeCProject(dir: string, files = 48): Promise<void> {
  await mkdir(join(dir, 'src'), { recursive: true });
  const headers: string[] = [];
  for (let i = 0; i < files; i += 1) {
    const functions: string[] = [];
    for (let f = 0; f < 12; f += 1) {
      functions.push(`
static unsigned long mix_${i}_${f}(unsigned long x) {
  for (int r = 0; r < ${8 + (f % 5)}; r++) { x ^= x << 13; x ^= x >> 7; x ^= x << 17; x += ${i * 31 + f}UL; }
  return x;
}`);
    }
    const calls = Array.from({ length: 12 }, (_, f) => `acc = mix_${i}_${f}(acc + ${f}UL);`).join(' ');
    await writeFile(
      join(dir, 'src', `unit${i}.c`),
      `#include <stdio.h>\n#include <string.h>\n#include "units.h"\n${functions.join('\n')}\n\nunsigned long unit${i}(unsigned long acc) { ${calls} return acc; }\n`,
    );
    headers.push(`unsigned long unit${i}(unsigned long acc);`);
  }
  await writeFile(join(dir, 'src', 'units.h'), `${headers.join('\n')}\n`);
  const chain = Array.from({ length: files }, (_, i) => `acc = unit${i}(acc);`).join(' ');
  await writeFile(
    join(dir, 'src', 'main.c'),
    `#include <stdio.h>\n#include "units.h"\nint main(void) { unsigned long acc = 1; ${chain} printf("%lu\\n", acc); return 0; }\n`,
  );
  const objects = [...Array.from({ length: files }, (_, i) => `build/unit${i}.o`), 'build/main.o'];
  await writeFile(
    join(dir, 'Makefile'),
    [
      'CFLAGS = -O2 -Wall',
      `OBJECTS = ${objects.join(' ')}`,
      'build/app: $(OBJECTS)',
      '\t$(CC) -o $@ $(OBJECTS)',
      'build/%.o: src/%.c src/units.h | build',
      '\t$(CC) $(CFLAGS) -c -o $@ $<',
      'build:',
      '\tmkdir -p build',
      '',
    ].join('\n'),
  );
}
