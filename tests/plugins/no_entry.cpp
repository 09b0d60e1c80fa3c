// A shared library that is not an attnbench plugin: it exports no entry point.
extern "C" int not_an_attnbench_entry_point() {
  return 0;
}
