//! Topology diagrams: cameras → stages → subjects, as Graphviz DOT or Mermaid.
