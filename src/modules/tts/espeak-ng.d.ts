/** The npm package `espeak-ng` (an Emscripten build of eSpeak NG) ships no types; this is the part Loa uses. */
declare module 'espeak-ng' {
  interface EmscriptenFs {
    writeFile(path: string, data: string | Uint8Array): void;
    readFile(path: string): Uint8Array;
    analyzePath(path: string): { exists: boolean };
  }
  interface ESpeakNgInstance {
    FS: EmscriptenFs;
  }
  interface ESpeakNgOptions {
    /** The espeak-ng command line, without the program name. */
    arguments: string[];
    /** Run before main(): the place to put input files into the in-memory file system. */
    preRun?: ((module: ESpeakNgInstance) => void)[];
    print?: (line: string) => void;
    printErr?: (line: string) => void;
  }
  export default function ESpeakNg(options: ESpeakNgOptions): Promise<ESpeakNgInstance>;
}
